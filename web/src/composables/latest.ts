import { ref } from 'vue'

/**
 * Requests where only the latest counts (a screen reloading as its controls change): an answer
 * or failure that arrives after a newer request started is dropped, and `loading` and `error`
 * describe the newest request only.
 */
export function useLatest() {
  const error = ref<string | null>(null)
  const loading = ref(false)
  let seq = 0
  async function run<T>(request: () => Promise<T>, apply: (value: T) => void): Promise<void> {
    const my = ++seq
    loading.value = true
    try {
      const value = await request()
      if (my !== seq) return
      apply(value)
      error.value = null
    } catch (e) {
      if (my === seq) error.value = e instanceof Error ? e.message : String(e)
    } finally {
      if (my === seq) loading.value = false
    }
  }
  return { error, loading, run }
}
