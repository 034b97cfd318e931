import { render } from 'preact'
import { App } from './app.js'
import { navigate } from './route.js'
import './styles.css'

if (location.pathname === '/' || location.pathname === '') navigate('/agents', true)
render(<App />, document.getElementById('app') as HTMLElement)
