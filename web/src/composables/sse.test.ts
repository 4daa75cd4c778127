import { describe, expect, it } from 'vitest'
import { SseParser } from './sse'

describe('SSE parser', () => {
  it('parses named events split across chunks', () => {
    const p = new SseParser()
    expect(p.push('event: logs\nda')).toEqual([])
    expect(p.push('ta: {"rows":[],"skipped":0}\n')).toEqual([])
    expect(p.push('\nevent: totals\ndata: {"api_call_count":3}\n\n')).toEqual([
      { event: 'logs', data: '{"rows":[],"skipped":0}' },
      { event: 'totals', data: '{"api_call_count":3}' },
    ])
  })
  it('joins multi-line data, ignores comments and defaults the name', () => {
    const p = new SseParser()
    expect(p.push(': keep-alive\n\ndata: a\ndata: b\n\n')).toEqual([{ event: 'message', data: 'a\nb' }])
  })
  it('handles CRLF, including a CR at the end of a chunk', () => {
    const p = new SseParser()
    expect(p.push('event: dropped\r')).toEqual([])
    expect(p.push('\ndata: {}\r\n\r\n')).toEqual([{ event: 'dropped', data: '{}' }])
  })
  it('keeps a value without the single leading space only', () => {
    const p = new SseParser()
    expect(p.push('data:  x\n\n')).toEqual([{ event: 'message', data: ' x' }])
  })
})
