import { createRouter, createWebHashHistory } from 'vue-router'
import { watch } from 'vue'
import { token } from './composables/auth'
import SignIn from './views/SignIn.vue'
import Dashboard from './views/Dashboard.vue'
import Logs from './views/Logs.vue'
import Keys from './views/Keys.vue'
import Export from './views/Export.vue'
import History from './views/History.vue'

// Hash routing: the server's console path is configurable, so URLs never depend on it.
export const router = createRouter({
  history: createWebHashHistory(),
  routes: [
    { path: '/signin', name: 'signin', component: SignIn, meta: { public: true } },
    { path: '/', name: 'dashboard', component: Dashboard },
    { path: '/logs', name: 'logs', component: Logs },
    { path: '/history', name: 'history', component: History },
    { path: '/keys', name: 'keys', component: Keys },
    { path: '/export', name: 'export', component: Export },
    { path: '/:rest(.*)*', redirect: '/' },
  ],
})

router.beforeEach((to) => {
  if (!to.meta.public && !token.value) return { name: 'signin', query: { next: to.fullPath } }
  return true
})

// A 401 anywhere clears the token: leave the current screen for sign-in.
watch(token, (t) => {
  if (!t && !router.currentRoute.value.meta.public) {
    void router.push({ name: 'signin', query: { next: router.currentRoute.value.fullPath } })
  }
})
