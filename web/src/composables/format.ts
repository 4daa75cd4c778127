// Number and duration formatting. Every function takes the UI locale so separators follow it.

export function formatInt(n: number | null | undefined, locale: string): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—'
  return new Intl.NumberFormat(locale, { maximumFractionDigits: 0 }).format(n)
}

const UNITS = ['', 'K', 'M', 'B', 'T']

/** Compact token counts: 950, 1.2K, 3.4M, 12B (the exact value belongs in a tooltip). */
export function formatCompact(n: number | null | undefined, locale: string): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—'
  const sign = n < 0 ? '-' : ''
  let v = Math.abs(n)
  let i = 0
  while (v >= 999.95 && i < UNITS.length - 1) {
    v /= 1000
    i++
  }
  if (i === 0) return sign + formatInt(v, locale)
  const digits = v < 10 ? 1 : v < 100 ? 1 : 0
  const s = new Intl.NumberFormat(locale, { maximumFractionDigits: digits }).format(v)
  return `${sign}${s}${UNITS[i]}`
}

export function formatPercent(p: number | null | undefined, locale: string): string {
  if (p === null || p === undefined || !Number.isFinite(p)) return '—'
  return `${new Intl.NumberFormat(locale, { maximumFractionDigits: 1 }).format(p)}%`
}

/** Milliseconds as "850 ms" or "12.3 s". */
export function formatMs(ms: number | null | undefined, locale: string): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  if (ms < 1000) return `${formatInt(ms, locale)} ms`
  return `${new Intl.NumberFormat(locale, { maximumFractionDigits: 1 }).format(ms / 1000)} s`
}

export interface TokenPart {
  key: 'input_uncached' | 'cache_read' | 'cache_write' | 'output' | 'reasoning' | 'unclassified'
  value: number
  share: number
}

const PARTS: TokenPart['key'][] = ['input_uncached', 'cache_read', 'cache_write', 'output', 'reasoning', 'unclassified']

/** Splits token buckets into parts with their share of the total (0–1); zero parts are kept. */
export function tokenSplit(b: Partial<Record<TokenPart['key'], number>> | null | undefined): TokenPart[] {
  const values = PARTS.map((key) => ({ key, value: Math.max(0, b?.[key] ?? 0) }))
  const total = values.reduce((s, p) => s + p.value, 0)
  return values.map((p) => ({ ...p, share: total > 0 ? p.value / total : 0 }))
}
