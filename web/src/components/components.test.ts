import { describe, expect, it, vi } from 'vitest'
import { createApp, h, nextTick, type Component } from 'vue'
import { i18n } from '../i18n'
import Num from './Num.vue'
import ShareList from './ShareList.vue'
import SourcesPanel from './SourcesPanel.vue'
import type { GroupRow, Source } from '../types'

function mount(comp: Component, props: Record<string, unknown>): HTMLElement {
  const el = document.createElement('div')
  createApp({ render: () => h(comp, props) }).use(i18n).mount(el)
  return el
}

const row = (name: string, calls: number, extra: Partial<GroupRow> = {}): GroupRow => ({
  name, call_count: calls, token_count: calls * 1000, error_count: 0, success_rate: 100, avg_time: 1, avg_ttft: null, ...extra,
})

describe('components', () => {
  it('Num shows compact tokens with the exact value in the tooltip', async () => {
    i18n.global.locale.value = 'en'
    await nextTick()
    const el = mount(Num, { value: 1234567, compact: true }).querySelector('span')!
    expect(el.textContent).toBe('1.2M')
    expect(el.getAttribute('title')).toBe('1,234,567')
    expect(mount(Num, { value: 1234567 }).textContent).toBe('1,234,567')
  })

  it('ShareList shows shares, managed key names and a translated "other" row', async () => {
    i18n.global.locale.value = 'zh-CN'
    await nextTick()
    const rows = [row('fp1', 6, { key_id: 1, key_name: 'team-a' }), row('fp2', 3), row('other', 1, { other: true })]
    const el = mount(ShareList, { title: 'T', rows, total: 10, testid: 'x' })
    const cells = [...el.querySelectorAll('tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent?.trim()))
    expect(cells[0]).toEqual(['team-a', '6', '6K', '0', '60%'])
    expect(cells[2]?.[0]).toBe('其他')
    expect(el.querySelector('th')?.textContent).toBe('名称')
    i18n.global.locale.value = 'en'
  })

  it('SourcesPanel is hidden without collectors and shows a translated badge per collector', async () => {
    const source: Source = {
      name: 'cpa-1', address: '10.0.0.5:8317', mode: 'subscribe', state: 'management key refused (401); next attempt in 60s', connected: false, subscribed: false,
      last_event: null, lag_ms: null, events: 1234, duplicates: 2, invalid: 0, events_per_second: 0, reconnects: 3, auth_failures: 2,
    }
    let reply: Source[] = []
    vi.stubGlobal('fetch', vi.fn(async () => new Response(JSON.stringify({ code: 0, data: reply }), { status: 200 })))
    const settle = async () => {
      for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0))
      await nextTick()
    }
    try {
      i18n.global.locale.value = 'en'
      const el = document.createElement('div')
      const empty = createApp({ render: () => h(SourcesPanel) }).use(i18n)
      empty.mount(el)
      await settle()
      expect(el.querySelector('[data-testid="sources"]')).toBeNull()
      empty.unmount()

      reply = [source]
      const app = createApp({ render: () => h(SourcesPanel) }).use(i18n)
      app.mount(el)
      await settle()
      const badge = el.querySelector('[data-testid="source-badge"]')!
      expect(badge.getAttribute('data-tone')).toBe('bad')
      expect(badge.textContent).toBe('Key refused')
      expect(el.querySelector('[data-col="state"]')?.textContent).toBe(source.state)
      expect(el.querySelector('[data-col="events"]')?.textContent).toBe('1,234')
      expect(el.querySelector('[data-col="last-event"]')?.textContent?.trim()).toBe('None yet')
      i18n.global.locale.value = 'zh-CN'
      await nextTick()
      expect(badge.textContent).toBe('密钥被拒')
      app.unmount()
    } finally {
      i18n.global.locale.value = 'en'
      vi.unstubAllGlobals()
    }
  })
})
