import { describe, expect, it } from 'vitest'
import { granularityFor, resolveRange } from './range'

const NOW = Date.UTC(2025, 5, 1, 12)

describe('ranges', () => {
  it('picks the granularity that follows the preset', () => {
    const g = (preset: '1h' | '24h' | '7d' | '30d' | '90d') => resolveRange({ preset, from: null, to: null }, NOW).granularity
    expect([g('1h'), g('24h'), g('7d'), g('30d'), g('90d')]).toEqual(['minute', 'hour', 'hour', 'day', 'day'])
  })
  it('resolves presets to a window ending now', () => {
    const w = resolveRange({ preset: '24h', from: null, to: null }, NOW)
    expect(w.to - w.from).toBe(24 * 3600_000)
    expect(w.to).toBeGreaterThan(NOW)
    expect(w.live).toBe(true)
  })
  it('keeps custom bounds and knows a past window is not live', () => {
    const w = resolveRange({ preset: 'custom', from: NOW - 3 * 86400_000, to: NOW - 86400_000 }, NOW)
    expect(w).toEqual({ from: NOW - 3 * 86400_000, to: NOW - 86400_000, granularity: 'hour', live: false })
    expect(granularityFor(3600_000)).toBe('minute')
    expect(granularityFor(20 * 86400_000)).toBe('day')
  })
})
