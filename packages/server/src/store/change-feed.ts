/**
 * Change notifications between the store and the replicas' live parts (streams, caches).
 * They only speed things up (wake a waiting stream, cut a killed agent's streams); the
 * transactional checks are what make the guarantees hold.
 */
export type Change =
  | { type: 'intent.available'; address_id: string }
  | { type: 'slot.freed'; address_id: string; instance_id: string }
  | { type: 'intent.event'; intent_id: string }
  | { type: 'agent.killed'; address_id: string }
  | { type: 'agent.resumed'; address_id: string }
  | { type: 'instance.quarantined'; address_id: string; instance_id: string }
  | { type: 'key.revoked'; key_id: string }
  | { type: 'mesh.event'; seqno: number }
  | { type: 'policy.changed'; address_id: string }
  | { type: 'alert.queued' }

export type ChangeListener = (change: Change) => void

export interface ChangeFeed {
  subscribe(listener: ChangeListener): () => void
  /**
   * Which unbroken run of the feed this is: the same number means no change since it was read
   * can have been missed. `null` while changes may be being missed (PostgreSQL's LISTEN
   * connection is down). Caches that rely on the feed to hear of invalidations check it.
   */
  readonly epoch: number | null
}

/** The in-process feed (the SQLite engine's whole feed; PostgreSQL feeds it from LISTEN). */
export class LocalFeed implements ChangeFeed {
  readonly #listeners = new Set<ChangeListener>()
  /** In-process: nothing can be missed. */
  readonly epoch: number | null = 0

  subscribe(listener: ChangeListener): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  publish(change: Change): void {
    for (const listener of this.#listeners) {
      try {
        listener(change)
      } catch {
        // A listener's failure must not stop the others or the committing caller.
      }
    }
  }
}
