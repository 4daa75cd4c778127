import { send, ApiError, type Params } from './api'

export interface SseEvent {
  event: string
  data: string
}

/** An incremental Server-Sent Events parser: feed text chunks, get complete events. */
export class SseParser {
  private buffer = ''
  private event = ''
  private data: string[] = []

  push(chunk: string): SseEvent[] {
    this.buffer += chunk
    const out: SseEvent[] = []
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer)
      // A lone trailing "\r" may be the first half of "\r\n": wait for more.
      if (!m || (m[0] === '\r' && m.index === this.buffer.length - 1)) break
      const line = this.buffer.slice(0, m.index)
      this.buffer = this.buffer.slice(m.index + m[0].length)
      const ev = this.line(line)
      if (ev) out.push(ev)
    }
    return out
  }

  private line(line: string): SseEvent | null {
    if (line === '') {
      const ev = this.data.length ? { event: this.event || 'message', data: this.data.join('\n') } : null
      this.event = ''
      this.data = []
      return ev
    }
    if (line.startsWith(':')) return null
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'event') this.event = value
    else if (field === 'data') this.data.push(value)
    return null
  }
}

export interface StreamHandlers {
  onEvent: (ev: SseEvent) => void
  onState?: (connected: boolean) => void
}

/**
 * Reads /api/console/stream with fetch (EventSource cannot send the Authorization header) and
 * reconnects with exponential backoff, also after a `dropped` event. Returns a stop function.
 */
export function openStream(params: Params, handlers: StreamHandlers): () => void {
  let stopped = false
  let controller: AbortController | null = null
  let timer: ReturnType<typeof setTimeout> | undefined
  let delay = 1000

  const run = async (): Promise<void> => {
    controller = new AbortController()
    try {
      const res = await send('/api/console/stream', { params, signal: controller.signal })
      if (!res.body) throw new Error('no body')
      handlers.onState?.(true)
      delay = 1000
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
      const parser = new SseParser()
      for (;;) {
        const { value, done } = await reader.read()
        if (done || stopped) break
        for (const ev of parser.push(value)) {
          if (ev.event === 'dropped') {
            controller.abort()
            break
          }
          handlers.onEvent(ev)
        }
      }
    } catch (e) {
      // A 401 has signed the user out; nothing to reconnect to.
      if (e instanceof ApiError && e.status === 401) stopped = true
    }
    handlers.onState?.(false)
    if (!stopped) {
      timer = setTimeout(() => void run(), delay)
      delay = Math.min(delay * 2, 30000)
    }
  }
  void run()
  return () => {
    stopped = true
    clearTimeout(timer)
    controller?.abort()
  }
}
