/** Exit codes of every command (documented in the README). */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  auth: 3,
  notFound: 4,
} as const

export type CommandResult = (typeof EXIT)[keyof typeof EXIT]
