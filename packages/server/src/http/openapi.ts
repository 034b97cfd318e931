import { z } from 'zod'
import type { Route } from './router.js'

const ERROR_SCHEMA = {
  type: 'object',
  required: ['ok', 'error'],
  properties: {
    ok: { const: false },
    error: {
      type: 'object',
      required: ['code', 'message', 'request_id'],
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        request_id: { type: 'string' },
        details: { type: 'object' },
      },
    },
  },
}

const toSchema = (schema: unknown): Record<string, unknown> =>
  z.toJSONSchema(schema as z.ZodType, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>

/** OpenAPI 3.1 from the route table: paths, access, request bodies and query parameters. */
export function buildOpenApi(routes: readonly Route[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const r of routes) {
    // `*name` (a catch-all tail) is documented as one more path parameter.
    const path = r.path.replace(/[:*]([a-z_]+)/g, '{$1}')
    const parameters: unknown[] = [...r.path.matchAll(/[:*]([a-z_]+)/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }))
    if (r.query) {
      const shape = (r.query as unknown as { shape?: Record<string, unknown> }).shape ?? {}
      for (const [name, schema] of Object.entries(shape)) {
        parameters.push({ name, in: 'query', required: false, schema: toSchema(schema) })
      }
    }
    const operation: Record<string, unknown> = {
      summary: r.summary,
      tags: [r.tag],
      parameters,
      'x-access': r.access,
      responses: {
        '200': r.stream
          ? { description: 'Server-sent events', content: { 'text/event-stream': { schema: { type: 'string' } } } }
          : r.raw
            ? { description: "The upstream's answer (status, headers and body passed through)" }
            : { description: 'OK', content: { 'application/json': { schema: { type: 'object' } } } },
        default: { description: 'Error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
      },
    }
    if (r.access !== 'public') operation['security'] = [{ apiKey: [] }, { bearer: [] }]
    if (r.body) {
      operation['requestBody'] = { required: false, content: { 'application/json': { schema: toSchema(r.body) } } }
    } else if (r.raw) {
      operation['requestBody'] = { required: false, content: { '*/*': { schema: {} } } }
    }
    paths[path] = { ...paths[path], [r.method.toLowerCase()]: operation }
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Chokepoint gateway', version },
    paths,
    components: {
      schemas: { Error: ERROR_SCHEMA },
      securitySchemes: {
        apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' },
        bearer: { type: 'http', scheme: 'bearer' },
      },
    },
  }
}
