/** Reads an environment variable when there is a `process` (Node); trimmed, `undefined` if unset or blank. */
export function readEnv(name: string): string | undefined {
  const env = typeof process === 'undefined' ? undefined : (process.env as Record<string, string | undefined>)
  const value = env?.[name]?.trim()
  return value === undefined || value === '' ? undefined : value
}
