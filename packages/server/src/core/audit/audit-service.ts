import type { AuditRow, Store } from '../../store/store.js'
import type { Principal } from '../auth/principal.js'
import { iso, type Clock } from '../clock.js'
import { GENESIS_HASH, auditHash } from './audit-chain.js'

/** The hashed fields of a stored entry, with `before`/`after` parsed back from their text. */
function entryBody(row: AuditRow) {
  return {
    seq: row.seq,
    at: row.at,
    actor: row.actor,
    action: row.action,
    target: row.target,
    reason: row.reason,
    before: row.before === null ? null : (JSON.parse(row.before) as unknown),
    after: row.after === null ? null : (JSON.parse(row.after) as unknown),
  }
}

export function auditView(row: AuditRow): Record<string, unknown> {
  return { ...entryBody(row), prev_hash: row.prev_hash, hash: row.hash }
}

const DENIED_WINDOW_MS = 60_000
const VERIFY_BATCH = 1_000

/** The append-only audit trail: listing, chain verification, denied-attempt entries. */
export class AuditService {
  readonly #store: Store
  readonly #clock: Clock
  /** `key_id route` → minute already audited (coalescing, DESIGN §11). */
  readonly #deniedSeen = new Map<string, number>()

  constructor(store: Store, clock: Clock) {
    this.#store = store
    this.#clock = clock
  }

  list(query: { after_seq?: number | undefined; limit: number; action_prefix?: string | undefined; target?: string | undefined }) {
    return this.#store.listAudit({
      after_seq: query.after_seq ?? 0,
      limit: query.limit,
      action_prefix: query.action_prefix ?? null,
      target: query.target ?? null,
    })
  }

  /** Recomputes the whole chain; reports the first entry whose link or hash does not match. */
  async verify(): Promise<{ entries: number; valid: boolean; first_broken_seq: number | null }> {
    let prev = GENESIS_HASH
    let expectedSeq = 1
    let entries = 0
    for (;;) {
      const rows = await this.#store.listAudit({ after_seq: expectedSeq - 1, limit: VERIFY_BATCH, action_prefix: null, target: null })
      for (const row of rows) {
        entries += 1
        let ok = row.seq === expectedSeq && row.prev_hash === prev
        if (ok) {
          try {
            const body = entryBody(row)
            ok = auditHash(prev, body) === row.hash
          } catch {
            ok = false
          }
        }
        if (!ok) return { entries, valid: false, first_broken_seq: expectedSeq }
        prev = row.hash
        expectedSeq += 1
      }
      if (rows.length < VERIFY_BATCH) return { entries, valid: true, first_broken_seq: null }
    }
  }

  /** An authenticated 403 on a control route; coalesced per key and route per minute. */
  async denied(principal: Principal, route: string, reason: string): Promise<void> {
    const now = this.#clock.now()
    const minute = Math.floor(now / DENIED_WINDOW_MS)
    const key = `${principal.key_id} ${route}`
    if (this.#deniedSeen.get(key) === minute) return
    this.#deniedSeen.set(key, minute)
    if (this.#deniedSeen.size > 10_000) {
      for (const [k, m] of this.#deniedSeen) if (m !== minute) this.#deniedSeen.delete(k)
    }
    await this.#store.appendAudit({
      at: iso(now),
      actor: `key:${principal.key_id}`,
      action: 'auth.denied',
      target: principal.key_id,
      reason,
      before: null,
      after: { route, role: principal.role },
    })
  }
}
