import { describe, expect, it } from 'vitest'
import en from './en'
import zh from './zh-CN'
import { detectLocale } from '.'

type Tree = { [k: string]: string | Tree }
function keys(t: Tree, prefix = ''): string[] {
  return Object.entries(t).flatMap(([k, v]) => (typeof v === 'string' ? [prefix + k] : keys(v, `${prefix}${k}.`)))
}

describe('messages', () => {
  it('has the same keys, all non-empty, in both languages', () => {
    expect(keys(zh as Tree).sort()).toEqual(keys(en as Tree).sort())
    for (const k of keys(zh as Tree)) expect(k.split('.').reduce<unknown>((t, p) => (t as Tree)[p], zh)).not.toBe('')
  })
  it('uses the same placeholders in both languages', () => {
    const ph = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort()
    for (const k of keys(en as Tree)) {
      const get = (t: Tree) => k.split('.').reduce<unknown>((x, p) => (x as Tree)[p], t) as string
      expect(ph(get(zh as Tree)), k).toEqual(ph(get(en as Tree)))
    }
  })
  it('detects the language from the browser unless one was chosen', () => {
    expect(detectLocale(null, ['zh-TW', 'en'])).toBe('zh-CN')
    expect(detectLocale(null, ['en-GB'])).toBe('en')
    expect(detectLocale(null, ['fr-FR'])).toBe('en')
    expect(detectLocale('zh-CN', ['en-US'])).toBe('zh-CN')
  })
})
