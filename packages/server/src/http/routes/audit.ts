import type { z } from 'zod'
import { auditView } from '../../core/audit/audit-service.js'
import { route, type Route } from '../router.js'
import { AuditQuery } from '../schemas.js'
import type { Services } from '../services.js'

export function auditRoutes(s: Services): Route[] {
  return [
    route<undefined, z.output<typeof AuditQuery>>({
      method: 'GET',
      path: '/v1/audit/events',
      access: 'viewer',
      tag: 'audit',
      summary: 'Audit entries in chain order, filtered by action prefix or target, paged by after_seq',
      query: AuditQuery,
      handler: async ({ query }) => {
        const limit = query.limit ?? 100
        const rows = await s.audit.list({ ...query, limit })
        const last = rows[rows.length - 1]
        return { entries: rows.map(auditView), next_after_seq: rows.length === limit && last ? last.seq : null }
      },
    }),
    route({
      method: 'GET',
      path: '/v1/audit/verify',
      access: 'viewer',
      tag: 'audit',
      summary: 'Recompute the hash chain; reports the first broken seq',
      handler: async () => s.audit.verify(),
    }),
  ]
}
