import type { Params } from './api'
import type { Window } from './range'
import { FILTER_FIELDS, type Filters } from '../types'

/** The query parameters for a window, the filters and the zone. */
export function readParams(w: Pick<Window, 'from' | 'to'> | null, filters: Filters, tz: string): Params {
  const p: Params = { tz }
  if (w) {
    p.from = w.from
    p.to = w.to
  }
  for (const f of FILTER_FIELDS) if (filters[f]) p[f] = filters[f]
  return p
}

export function hasFilters(filters: Filters): boolean {
  return FILTER_FIELDS.some((f) => filters[f] !== '')
}
