import type { KeyRow, Role, Store } from '../../store/store.js'
import { iso, type Clock } from '../clock.js'
import { GatewayError, conflict } from '../errors.js'
import { digestsEqual, isAddress, newApiKey, newKeyId, sha256Hex } from '../ids.js'
import type { Principal } from './principal.js'

export interface KeyView {
  key_id: string
  role: Role
  name: string | null
  agent: string | null
  address_id: string | null
  created_at: string
  revoked_at: string | null
}

export const keyView = (row: KeyRow): KeyView => ({
  key_id: row.key_id,
  role: row.role,
  name: row.name,
  agent: row.address,
  address_id: row.address_id,
  created_at: new Date(row.created_at).toISOString(),
  revoked_at: row.revoked_at === null ? null : new Date(row.revoked_at).toISOString(),
})

const KEY_SHAPE = /^cp_[0-9A-Za-z]{20,128}$/

export interface KeyCacheOptions {
  /** How long a looked-up key is trusted without reading it again (0: no cache). */
  ttlMs: number
  /** At most this many keys are remembered (the oldest are dropped first). */
  maxEntries: number
}

export const DEFAULT_KEY_CACHE: KeyCacheOptions = { ttlMs: 300_000, maxEntries: 100_000 }

interface CachedKey {
  principal: Principal
  hash: string
  expiresAt: number
}

/**
 * API keys: creation, lookup (hashed, constant-time), revocation, bootstrap.
 *
 * Valid keys are remembered by hash so that a request does not read the key table: a
 * revocation reaches every replica's cache through the change feed (`key.revoked`), and the
 * cache is only trusted for as long as the feed has run unbroken (its epoch): while the feed
 * may be missing changes every request reads the store, and after a reconnect the cache starts
 * empty. The TTL only bounds what a change made behind the gateway's back (SQL by hand) costs.
 */
export class KeyService {
  readonly #store: Store
  readonly #clock: Clock
  readonly #cache = new Map<string, CachedKey>()
  readonly #cacheOptions: KeyCacheOptions
  #cacheEpoch: number | null = null
  /** Bumped on every invalidation: a lookup that raced one does not fill the cache. */
  #generation = 0

  constructor(store: Store, clock: Clock, cache: KeyCacheOptions = DEFAULT_KEY_CACHE) {
    this.#store = store
    this.#clock = clock
    this.#cacheOptions = cache
    store.feed.subscribe((change) => {
      if (change.type !== 'key.revoked') return
      this.#generation += 1
      for (const [hash, entry] of this.#cache) if (entry.principal.key_id === change.key_id) this.#cache.delete(hash)
    })
  }

  /** The cache, if the feed has run unbroken since it was filled; otherwise emptied (or unusable: null). */
  #usableCache(): Map<string, CachedKey> | null {
    if (this.#cacheOptions.ttlMs <= 0) return null
    const epoch = this.#store.feed.epoch
    if (epoch !== this.#cacheEpoch) {
      this.#cache.clear()
      this.#generation += 1
      this.#cacheEpoch = epoch
    }
    return epoch === null ? null : this.#cache
  }

  /** Resolves a raw key to its principal; any failure is the same 401. */
  async authenticate(raw: string | undefined): Promise<Principal> {
    if (raw === undefined || raw === '') {
      throw new GatewayError('unauthorized', 'missing API key: send it as x-api-key or Authorization: Bearer')
    }
    const hash = sha256Hex(raw)
    const cache = this.#usableCache()
    const now = this.#clock.now()
    const hit = cache?.get(hash)
    // The map finds the entry by hash; the comparison itself is constant-time, as for the store.
    if (hit && hit.expiresAt > now && digestsEqual(hit.hash, hash)) return hit.principal
    const generation = this.#generation
    const row = KEY_SHAPE.test(raw) ? await this.#store.findKeyByHash(hash) : undefined
    // The index lookup finds the row by hash; the comparison itself is constant-time.
    if (!row || !digestsEqual(row.key_hash, hash) || row.revoked_at !== null) {
      throw new GatewayError('unauthorized', 'invalid or revoked API key')
    }
    const principal: Principal = Object.freeze({ key_id: row.key_id, role: row.role, address_id: row.address_id, address: row.address })
    // Re-checking the feed first: a reconnect during the read bumps the generation, so a row
    // read while a revocation may have been missed is not remembered.
    if (cache && this.#usableCache() === cache && generation === this.#generation) {
      cache.delete(hash)
      if (cache.size >= this.#cacheOptions.maxEntries) {
        const oldest = cache.keys().next()
        if (!oldest.done) cache.delete(oldest.value)
      }
      cache.set(hash, { principal, hash: row.key_hash, expiresAt: now + this.#cacheOptions.ttlMs })
    }
    return principal
  }

  async create(
    input: { role: Role; agent?: string | undefined; name?: string | undefined },
    actor = 'system',
  ): Promise<{
    row: KeyRow
    key: string
  }> {
    if (input.role === 'agent' && input.agent === undefined) {
      throw new GatewayError('schema_invalid', 'an agent key needs `agent`, the address it acts as', {
        details: { field: 'agent' },
      })
    }
    if (input.role !== 'agent' && input.agent !== undefined) {
      throw new GatewayError('schema_invalid', 'only agent keys are bound to an agent', { details: { field: 'agent' } })
    }
    if (input.agent !== undefined && !isAddress(input.agent)) {
      throw new GatewayError('schema_invalid', 'agent must be an address like agent://org/workspace/name', {
        details: { field: 'agent' },
      })
    }
    const key = newApiKey()
    const now = this.#clock.now()
    const row = await this.#store.insertKey(
      {
        key_id: newKeyId(),
        role: input.role,
        name: input.name ?? null,
        key_hash: sha256Hex(key),
        address: input.agent ?? null,
        created_at: now,
        revoked_at: null,
      },
      now,
      (created) => ({
        at: iso(now),
        actor,
        action: 'key.create',
        target: created.key_id,
        reason: null,
        before: null,
        after: { role: created.role, name: created.name, agent: created.address },
      }),
    )
    return { row, key }
  }

  list(): Promise<KeyRow[]> {
    return this.#store.listKeys()
  }

  async revoke(keyId: string, actor: string): Promise<KeyRow> {
    const now = this.#clock.now()
    return this.#store.revokeKey(
      keyId,
      now,
      (key, otherAdmins) => {
        if (key.role === 'admin' && key.revoked_at === null && otherAdmins === 0) {
          throw conflict('this is the last active admin key; create another admin key before revoking it')
        }
      },
      (key) => ({
        at: iso(now),
        actor,
        action: 'key.revoke',
        target: key.key_id,
        reason: null,
        before: { role: key.role, name: key.name, agent: key.address, revoked: false },
        after: { role: key.role, name: key.name, agent: key.address, revoked: true },
      }),
    )
  }

  /**
   * First start: make sure an admin key exists. A configured key is upserted (idempotent,
   * also the recovery path); otherwise a new key is created and returned to print once.
   */
  async bootstrap(configuredKey: string | undefined): Promise<{ printedKey: string | null }> {
    const now = this.#clock.now()
    if (configuredKey !== undefined) {
      await this.#store.ensureAdminKey({
        key_id: `key_admin_${sha256Hex(configuredKey).slice(0, 12)}`,
        role: 'admin',
        name: 'bootstrap (CHOKEPOINT_ADMIN_KEY)',
        key_hash: sha256Hex(configuredKey),
        address_id: null,
        address: null,
        created_at: now,
        revoked_at: null,
      })
      return { printedKey: null }
    }
    const key = newApiKey()
    const keyId = newKeyId()
    const created = await this.#store.createFirstAdminKey(
      {
        key_id: keyId,
        role: 'admin',
        name: 'bootstrap',
        key_hash: sha256Hex(key),
        address_id: null,
        address: null,
        created_at: now,
        revoked_at: null,
      },
      { at: iso(now), actor: 'system', action: 'key.create', target: keyId, reason: null, before: null, after: { role: 'admin', name: 'bootstrap', agent: null } },
    )
    return { printedKey: created ? key : null }
  }
}

/** Shape check used by config for CHOKEPOINT_ADMIN_KEY. */
export const isWellFormedKey = (key: string): boolean => KEY_SHAPE.test(key)
