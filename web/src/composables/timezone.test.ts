import { describe, expect, it } from 'vitest'
import { formatDateTime, formatShort, fromLocalInput, toLocalInput, zoneOffset, isValidZone } from './timezone'

const INSTANT = Date.UTC(2025, 0, 2, 3, 4, 5) // 2025-01-02T03:04:05Z

describe('time zones', () => {
  it('shows the same instant in different zones', () => {
    expect(formatDateTime(INSTANT, 'UTC')).toBe('2025-01-02 03:04:05')
    expect(formatDateTime(INSTANT, 'Asia/Shanghai')).toBe('2025-01-02 11:04:05')
    expect(formatDateTime(INSTANT, 'America/New_York')).toBe('2025-01-01 22:04:05')
    expect(formatShort(INSTANT, 'Asia/Shanghai')).toBe('01-02 11:04')
  })
  it('follows daylight saving time', () => {
    const july = Date.UTC(2025, 6, 1, 12)
    expect(zoneOffset(july, 'America/New_York')).toBe(-4 * 3600_000)
    expect(zoneOffset(INSTANT, 'America/New_York')).toBe(-5 * 3600_000)
    expect(zoneOffset(INSTANT, 'Asia/Kolkata')).toBe(5.5 * 3600_000)
  })
  it('round-trips datetime-local inputs as wall time in the zone', () => {
    const at = Date.UTC(2025, 0, 2, 3, 4)
    for (const tz of ['UTC', 'Asia/Shanghai', 'America/New_York', 'Asia/Kolkata']) {
      expect(fromLocalInput(toLocalInput(at, tz), tz)).toBe(at)
    }
    expect(fromLocalInput('2025-01-02T11:04', 'Asia/Shanghai')).toBe(at)
    expect(fromLocalInput('nonsense', 'UTC')).toBeNull()
  })
  it('validates zone names', () => {
    expect(isValidZone('Europe/Berlin')).toBe(true)
    expect(isValidZone('Mars/Olympus')).toBe(false)
  })
})
