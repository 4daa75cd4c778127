import { describe, expect, it } from 'vitest'
import { formatCompact, formatInt, formatMs, formatPercent, tokenSplit } from './format'

describe('number formatting', () => {
  it('separates thousands by locale', () => {
    expect(formatInt(1234567, 'en')).toBe('1,234,567')
    expect(formatInt(1234567, 'zh-CN')).toBe('1,234,567')
    expect(formatInt(null, 'en')).toBe('—')
  })
  it('compacts token counts', () => {
    expect(formatCompact(950, 'en')).toBe('950')
    expect(formatCompact(1234, 'en')).toBe('1.2K')
    expect(formatCompact(1_250_000, 'en')).toBe('1.3M')
    expect(formatCompact(999_999, 'en')).toBe('1M')
    expect(formatCompact(12_345_678_901, 'en')).toBe('12.3B')
    expect(formatCompact(0, 'en')).toBe('0')
    expect(formatCompact(undefined, 'en')).toBe('—')
  })
  it('formats percentages and durations', () => {
    expect(formatPercent(66.6667, 'en')).toBe('66.7%')
    expect(formatPercent(null, 'en')).toBe('—')
    expect(formatMs(850, 'en')).toBe('850 ms')
    expect(formatMs(12345, 'en')).toBe('12.3 s')
  })
})

describe('token split', () => {
  it('keeps every bucket with its share', () => {
    const parts = tokenSplit({ input_uncached: 600, cache_read: 300, output: 100 })
    expect(parts.map((p) => p.key)).toEqual(['input_uncached', 'cache_read', 'cache_write', 'output', 'reasoning', 'unclassified'])
    expect(parts.find((p) => p.key === 'input_uncached')?.share).toBeCloseTo(0.6)
    expect(parts.find((p) => p.key === 'cache_write')?.value).toBe(0)
    expect(parts.reduce((s, p) => s + p.share, 0)).toBeCloseTo(1)
  })
  it('gives zero shares when there are no tokens', () => {
    expect(tokenSplit(null).every((p) => p.share === 0 && p.value === 0)).toBe(true)
  })
})
