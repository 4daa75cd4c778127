import { ref } from 'vue'

// The signed-in token lives in sessionStorage: it is gone when the tab closes.
const STORAGE_KEY = 'tokenboard.token'

export const token = ref<string | null>(sessionStorage.getItem(STORAGE_KEY))
/** Why the user was sent back to sign-in (an i18n key), shown there once. */
export const signOutReason = ref<string | null>(null)

export function signIn(value: string): void {
  token.value = value
  sessionStorage.setItem(STORAGE_KEY, value)
  signOutReason.value = null
}

export function signOut(reason: string | null = null): void {
  token.value = null
  sessionStorage.removeItem(STORAGE_KEY)
  signOutReason.value = reason
}
