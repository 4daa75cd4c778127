import type { Granularity } from '../types'

export type Preset = '1h' | '24h' | '7d' | '30d' | '90d' | 'custom'
export const PRESETS: Preset[] = ['1h', '24h', '7d', '30d', '90d', 'custom']

const HOUR = 3600_000
const DAY = 24 * HOUR
const SPANS: Record<Exclude<Preset, 'custom'>, number> = { '1h': HOUR, '24h': DAY, '7d': 7 * DAY, '30d': 30 * DAY, '90d': 90 * DAY }

export interface RangeSel {
  preset: Preset
  /** Custom bounds, epoch ms; used only when preset is 'custom'. */
  from: number | null
  to: number | null
}

export interface Window {
  from: number
  to: number
  granularity: Granularity
  /** Whether the window ends now (live data belongs in it). */
  live: boolean
}

/** The bucket size that follows the span: ≤ 2 h minutes, ≤ 8 d hours, else days. */
export function granularityFor(span: number): Granularity {
  if (span <= 2 * HOUR) return 'minute'
  if (span <= 8 * DAY) return 'hour'
  return 'day'
}

/** Resolves a selection to absolute bounds at `now`. */
export function resolveRange(sel: RangeSel, now: number = Date.now()): Window {
  if (sel.preset === 'custom' && sel.from !== null && sel.to !== null && sel.to > sel.from) {
    return { from: sel.from, to: sel.to, granularity: granularityFor(sel.to - sel.from), live: sel.to >= now }
  }
  const span = SPANS[sel.preset === 'custom' ? '24h' : sel.preset]
  // `to` is exclusive; one second ahead keeps an event stamped "now" inside.
  const to = now + 1000
  return { from: to - span, to, granularity: granularityFor(span), live: true }
}
