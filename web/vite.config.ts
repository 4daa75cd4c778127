import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

// `base: './'` keeps asset URLs relative: the console path is configurable on the server.
// `emptyOutDir: false` keeps the committed dist/.gitignore; scripts/clean-dist.mjs removes old files.
export default defineConfig({
  base: './',
  plugins: [vue()],
  define: {
    __VUE_I18N_FULL_INSTALL__: false,
    __VUE_I18N_LEGACY_API__: false,
    __INTLIFY_PROD_DEVTOOLS__: false,
    __VUE_PROD_DEVTOOLS__: false,
  },
  build: {
    outDir: 'dist',
    emptyOutDir: false,
    target: 'es2022',
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: { '/api': process.env.TOKENBOARD_URL ?? 'http://127.0.0.1:8080' },
  },
})
