#!/usr/bin/env node
// Thin launcher so `npm ci` can link the bin before the TypeScript build has run.
import '../dist/main.js'
