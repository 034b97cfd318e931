const ADDRESS = /^agent:\/\/([a-z0-9][a-z0-9_-]{0,62})\/([a-z0-9][a-z0-9_-]{0,62})\/([a-z0-9][a-z0-9_-]{0,62})$/

/** `agent://org/workspace/name` → its three segments; `undefined` if it is not an address. */
export function addressSegments(address: string): [org: string, workspace: string, name: string] | undefined {
  const m = address.length <= 255 ? ADDRESS.exec(address) : null
  return m ? [m[1] as string, m[2] as string, m[3] as string] : undefined
}
