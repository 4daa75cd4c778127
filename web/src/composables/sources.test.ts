import { describe, expect, it } from 'vitest'
import { formatAgo, parseTime, sourceBadge } from './sources'

const src = (over: Partial<Parameters<typeof sourceBadge>[0]> = {}) => ({
  mode: 'subscribe', connected: false, subscribed: false, reconnects: 0, auth_failures: 0, ...over,
})

describe('collector badge', () => {
  it('is green when connected: subscribed, or polling in the poll modes', () => {
    expect(sourceBadge(src({ connected: true, subscribed: true }))).toEqual({ tone: 'ok', label: 'subscribed' })
    expect(sourceBadge(src({ mode: 'poll/resp', connected: true }))).toEqual({ tone: 'ok', label: 'polling' })
    expect(sourceBadge(src({ mode: 'poll/http', connected: true, reconnects: 4 }))).toEqual({ tone: 'ok', label: 'polling' })
  })
  it('is amber while connecting or reconnecting', () => {
    expect(sourceBadge(src())).toEqual({ tone: 'warn', label: 'connecting' })
    expect(sourceBadge(src({ connected: true, subscribed: false }))).toEqual({ tone: 'warn', label: 'connecting' })
    expect(sourceBadge(src({ reconnects: 3 }))).toEqual({ tone: 'warn', label: 'reconnecting' })
  })
  it('is red when the key was refused and the collector is not connected', () => {
    expect(sourceBadge(src({ auth_failures: 1, reconnects: 2 }))).toEqual({ tone: 'bad', label: 'refused' })
    expect(sourceBadge(src({ mode: 'poll/http', auth_failures: 5 }))).toEqual({ tone: 'bad', label: 'refused' })
    // An old refusal does not matter once the collector is connected again.
    expect(sourceBadge(src({ auth_failures: 1, connected: true, subscribed: true }))).toEqual({ tone: 'ok', label: 'subscribed' })
  })
})

describe('last event', () => {
  const now = Date.UTC(2025, 0, 2, 8, 0, 0)
  it('is shown relative to now in the locale', () => {
    expect(formatAgo(now - 5_000, now, 'en')).toBe('5s ago')
    expect(formatAgo(now - 3 * 60_000 - 10_000, now, 'en')).toBe('3m ago')
    expect(formatAgo(now - 2 * 3_600_000, now, 'en')).toBe('2h ago')
    expect(formatAgo(now - 3 * 86_400_000, now, 'en')).toBe('3d ago')
    expect(formatAgo(now - 5_000, now, 'zh-CN')).toBe('5秒前')
    expect(formatAgo(now + 2_000, now, 'en')).toBe('0s ago')
  })
  it('parses RFC 3339 and tolerates null', () => {
    expect(parseTime('2025-01-02T08:00:00Z')).toBe(now)
    expect(parseTime('2025-01-02T08:00:00.250Z')).toBe(now + 250)
    expect(parseTime(null)).toBeNull()
    expect(parseTime('not a time')).toBeNull()
  })
})
