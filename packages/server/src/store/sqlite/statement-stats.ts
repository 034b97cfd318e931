import type { Statement } from 'better-sqlite3'
import type { StoreStats } from '../store.js'

type Method = 'run' | 'get' | 'all' | 'iterate'
const METHODS: readonly Method[] = ['run', 'get', 'all', 'iterate']

/**
 * Counts every execution of a prepared statement (`run`, `get`, `all`, `iterate`) by name, and
 * the transaction statements the write queue issues (BEGIN/COMMIT, SAVEPOINT/RELEASE), which
 * better-sqlite3 runs natively. An increment per call: cheap enough to stay on in production.
 */
export class StatementCounter {
  statements = 0
  transactionStatements = 0
  readonly #byName = new Map<string, { n: number }>()

  /** Makes `stmt` count its executions under `name`; returns it. */
  wrap<S extends Statement>(stmt: S, name: string): S {
    let slot = this.#byName.get(name)
    if (!slot) {
      slot = { n: 0 }
      this.#byName.set(name, slot)
    }
    const counted = slot
    const target = stmt as unknown as Record<Method, (...args: unknown[]) => unknown>
    for (const method of METHODS) {
      const original = target[method]
      target[method] = (...args: unknown[]) => {
        this.statements += 1
        counted.n += 1
        return original.apply(stmt, args)
      }
    }
    return stmt
  }

  /** Wraps every statement of a prepared set under its key. */
  wrapAll<T extends Record<string, Statement>>(statements: T): T {
    for (const [name, stmt] of Object.entries(statements)) this.wrap(stmt, name)
    return statements
  }

  snapshot(): StoreStats {
    const byStatement: Record<string, number> = {}
    for (const [name, slot] of this.#byName) if (slot.n > 0) byStatement[name] = slot.n
    return {
      statements: this.statements,
      transaction_statements: this.transactionStatements,
      by_statement: byStatement,
    }
  }
}
