import { onBeforeUnmount, ref, watch, type WatchSource } from 'vue'
import { openStream } from './sse'
import type { Params } from './api'
import type { LogRow } from '../types'

export interface LogsEvent {
  rows: LogRow[]
  skipped: number
}

/**
 * Follows the live stream for the given filters while `enabled` is true; reopens it when the
 * filters change and closes it with the component. `onTotals` runs on each `totals` event.
 */
export function useLive(params: WatchSource<Params | null>, onLogs: (ev: LogsEvent) => void, onTotals?: () => void) {
  const connected = ref(false)
  let stop: (() => void) | null = null

  const close = () => {
    stop?.()
    stop = null
    connected.value = false
  }
  watch(
    params,
    (p) => {
      close()
      if (!p) return
      stop = openStream(p, {
        onState: (c) => (connected.value = c),
        onEvent: (ev) => {
          if (ev.event === 'totals') onTotals?.()
          if (ev.event !== 'logs') return
          try {
            onLogs(JSON.parse(ev.data) as LogsEvent)
          } catch {
            // A malformed event is skipped; the next one carries fresh rows.
          }
        },
      })
    },
    { immediate: true, deep: true },
  )
  onBeforeUnmount(close)
  return { connected }
}

/** Runs `fn` at most once per `ms`, with a trailing call so the last change is never lost. */
export function throttle(fn: () => void, ms: number): () => void {
  let last = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  return () => {
    const wait = last + ms - Date.now()
    if (wait <= 0) {
      last = Date.now()
      fn()
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = undefined
        last = Date.now()
        fn()
      }, wait)
    }
  }
}
