import { describe, expect, it } from 'vitest'
import { useLatest } from './latest'

function deferred<T>() {
  let resolve!: (v: T) => void
  let reject!: (e: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

describe('useLatest', () => {
  it('applies only the newest answer, whatever order they arrive in', async () => {
    const { run, loading } = useLatest()
    const applied: string[] = []
    const first = deferred<string>()
    const second = deferred<string>()
    const a = run(() => first.promise, (v) => applied.push(v))
    const b = run(() => second.promise, (v) => applied.push(v))
    expect(loading.value).toBe(true)
    second.resolve('new')
    await b
    expect(loading.value).toBe(false)
    first.resolve('old')
    await a
    expect(applied).toEqual(['new'])
    expect(loading.value).toBe(false)
  })
  it('reports the newest failure and clears it on the next success', async () => {
    const { run, error } = useLatest()
    const stale = deferred<number>()
    const late = run(() => stale.promise, () => {})
    await run(() => Promise.reject(new Error('boom')), () => {})
    expect(error.value).toBe('boom')
    stale.reject(new Error('stale'))
    await late
    expect(error.value).toBe('boom')
    await run(() => Promise.resolve(1), () => {})
    expect(error.value).toBeNull()
  })
})
