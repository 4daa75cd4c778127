import { createI18n } from 'vue-i18n'
import { watch } from 'vue'
import en from './en'
import zhCN from './zh-CN'

export type Locale = 'zh-CN' | 'en'
export const LOCALES: { code: Locale; label: string }[] = [
  { code: 'zh-CN', label: '简体中文' },
  { code: 'en', label: 'English' },
]
const STORAGE_KEY = 'tokenboard.locale'

export function detectLocale(saved: string | null, languages: readonly string[]): Locale {
  if (saved === 'zh-CN' || saved === 'en') return saved
  for (const l of languages) {
    if (l.toLowerCase().startsWith('zh')) return 'zh-CN'
    if (l.toLowerCase().startsWith('en')) return 'en'
  }
  return 'en'
}

export const i18n = createI18n({
  legacy: false,
  locale: detectLocale(localStorage.getItem(STORAGE_KEY), navigator.languages ?? [navigator.language]),
  fallbackLocale: 'en',
  messages: { en, 'zh-CN': zhCN },
})

const locale = i18n.global.locale
const applyLang = (l: string) => (document.documentElement.lang = l)
applyLang(locale.value)
watch(locale, (l) => {
  localStorage.setItem(STORAGE_KEY, l)
  applyLang(l)
})
