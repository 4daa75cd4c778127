import { ref, watch } from 'vue'

const STORAGE_KEY = 'tokenboard.tz'

export function browserZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'
}

export function isValidZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz })
    return true
  } catch {
    return false
  }
}

function initialZone(): string {
  const saved = localStorage.getItem(STORAGE_KEY)
  return saved && isValidZone(saved) ? saved : browserZone()
}

/** The zone every table, chart and export uses; remembered in localStorage. */
export const timeZone = ref(initialZone())
watch(timeZone, (tz) => localStorage.setItem(STORAGE_KEY, tz))

export function zoneList(): string[] {
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : []
  return [...new Set(['UTC', browserZone(), timeZone.value, ...zones])]
}

type Part = 'year' | 'month' | 'day' | 'hour' | 'minute' | 'second'

function parts(ms: number, tz: string): Record<Part, string> {
  const f = new Intl.DateTimeFormat('en-US', {
    timeZone: tz,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  })
  const out = { year: '', month: '', day: '', hour: '', minute: '', second: '' }
  for (const p of f.formatToParts(new Date(ms))) if (p.type in out) out[p.type as Part] = p.value
  return out
}

/** "2025-01-02 08:00:00" in the zone. */
export function formatDateTime(ms: number, tz: string): string {
  const p = parts(ms, tz)
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`
}

/** "01-02 08:00" in the zone: short enough for chart axes and bucket lists. */
export function formatShort(ms: number, tz: string): string {
  const p = parts(ms, tz)
  return `${p.month}-${p.day} ${p.hour}:${p.minute}`
}

/** The value of an <input type="datetime-local"> showing `ms` in the zone. */
export function toLocalInput(ms: number, tz: string): string {
  const p = parts(ms, tz)
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`
}

/** The zone's offset from UTC at `ms`, in milliseconds. */
export function zoneOffset(ms: number, tz: string): number {
  const p = parts(ms, tz)
  const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second)
  return asUtc - Math.floor(ms / 1000) * 1000
}

/** Reads an <input type="datetime-local"> value as wall time in the zone. */
export function fromLocalInput(value: string, tz: string): number | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value)
  if (!m) return null
  const wall = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!)
  // Two passes settle the offset around DST changes.
  let ms = wall - zoneOffset(wall, tz)
  ms = wall - zoneOffset(ms, tz)
  return ms
}
