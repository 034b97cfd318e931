/**
 * The SQL pieces of an agents page that both engines share (the same text runs on SQLite and
 * PostgreSQL): the search pattern and the sort. The agents table is `a`; cost and intents
 * sorts join the window's counter sums as `c` (`c.cost`, `c.intents`).
 */
import type { AgentPageQuery } from './store.js'

/** `%text%` with LIKE's wildcards and the escape character escaped (`ESCAPE '\'`). */
export function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
}

/** Whether the sort needs the window's counter sums joined as `c`. */
export function sortsByCounters(query: AgentPageQuery): boolean {
  return query.sort === 'cost' || query.sort === 'intents'
}

/**
 * ORDER BY of a page: ties by address (ascending) so pages are stable. Agents without counters
 * count 0; agents that never beat come last in `last_heartbeat desc` (first in `asc`).
 */
export function agentOrderBy(query: AgentPageQuery): string {
  const dir = query.order === 'desc' ? 'DESC' : 'ASC'
  switch (query.sort) {
    case 'cost':
      return `coalesce(c.cost, 0) ${dir}, a.address`
    case 'intents':
      return `coalesce(c.intents, 0) ${dir}, a.address`
    case 'last_heartbeat':
      return `a.last_heartbeat_at ${dir} NULLS ${dir === 'DESC' ? 'LAST' : 'FIRST'}, a.address`
    case 'registered':
      return `a.created_at ${dir}, a.address`
  }
}
