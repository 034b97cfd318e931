import { ChokepointError } from '../core/errors.js'

/**
 * Tagged template for URL paths: every parameter is percent-encoded as one segment, so an
 * `agent://org/ws/name` address or an id with `/` cannot change the route.
 *
 * @example path`/v1/mesh/agents/${'agent://acme/prod/deployer'}/kill`
 *   // → '/v1/mesh/agents/agent%3A%2F%2Facme%2Fprod%2Fdeployer/kill'
 */
export function path(statics: TemplateStringsArray, ...params: (string | number)[]): string {
  let out = statics[0] ?? ''
  params.forEach((param, i) => {
    const value = String(param)
    if (value === '' || value === '.' || value === '..') {
      throw new ChokepointError(`path parameter ${JSON.stringify(value)} is not allowed in ${statics.join('…')}`)
    }
    out += encodeURIComponent(value) + (statics[i + 1] ?? '')
  })
  return out
}
