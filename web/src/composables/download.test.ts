import { describe, expect, it } from 'vitest'
import { dispositionName } from './download'

describe('Content-Disposition', () => {
  it('reads quoted, bare and RFC 5987 names', () => {
    expect(dispositionName('attachment; filename="tokenboard-2025.csv"')).toBe('tokenboard-2025.csv')
    expect(dispositionName('attachment; filename=logs.ndjson')).toBe('logs.ndjson')
    expect(dispositionName("attachment; filename*=UTF-8''%E6%97%A5%E5%BF%97.json")).toBe('日志.json')
    expect(dispositionName(null)).toBeNull()
    expect(dispositionName('inline')).toBeNull()
  })
})
