// Collector (sources.cliproxyapi) status: the badge each source gets and how old its last event is.
import type { Source } from '../types'

export type BadgeTone = 'ok' | 'warn' | 'bad'
export type BadgeLabel = 'subscribed' | 'polling' | 'connecting' | 'reconnecting' | 'refused'

export interface Badge {
  tone: BadgeTone
  /** The key under `sources.badge` in the messages. */
  label: BadgeLabel
}

/**
 * Green when connected ("subscribed" for subscribe mode once the subscription is acknowledged,
 * "polling" for the poll modes); red when the proxy refused the management key and the collector
 * is not connected; amber otherwise ("reconnecting" after a lost or failed connection).
 */
export function sourceBadge(s: Pick<Source, 'mode' | 'connected' | 'subscribed' | 'reconnects' | 'auth_failures'>): Badge {
  if (s.connected) {
    if (s.mode !== 'subscribe') return { tone: 'ok', label: 'polling' }
    if (s.subscribed) return { tone: 'ok', label: 'subscribed' }
    return { tone: 'warn', label: 'connecting' }
  }
  if (s.auth_failures > 0) return { tone: 'bad', label: 'refused' }
  return { tone: 'warn', label: s.reconnects > 0 ? 'reconnecting' : 'connecting' }
}

const STEPS: [Intl.RelativeTimeFormatUnit, number][] = [
  ['second', 60],
  ['minute', 60],
  ['hour', 24],
  ['day', Infinity],
]

/** "5s ago", "3m ago", "2h ago" in the locale; times slightly in the future count as now. */
export function formatAgo(ms: number, now: number, locale: string): string {
  let v = Math.max(0, Math.floor((now - ms) / 1000))
  const f = new Intl.RelativeTimeFormat(locale, { numeric: 'always', style: 'narrow' })
  for (const [unit, size] of STEPS) {
    if (v < size) return f.format(-v, unit)
    v = Math.floor(v / size)
  }
  return f.format(-v, 'day')
}

/** Parses the server's RFC 3339 `last_event`; null when absent or unreadable. */
export function parseTime(s: string | null | undefined): number | null {
  if (!s) return null
  const ms = Date.parse(s)
  return Number.isFinite(ms) ? ms : null
}
