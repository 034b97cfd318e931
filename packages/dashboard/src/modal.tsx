import type { ComponentChildren } from 'preact'
import { useEffect, useRef } from 'preact/hooks'

/**
 * A modal dialog: focus moves in and is trapped, Esc and the Cancel button close it, focus
 * returns to what opened it. Live updates re-render the page behind it without touching it.
 */
export function Modal(props: { title: string; onClose: () => void; children: ComponentChildren }) {
  const box = useRef<HTMLDivElement>(null)
  // What had focus when the modal opened (read at the first render, before anything moves it).
  const opener = useRef(document.activeElement as HTMLElement | null)
  useEffect(() => {
    const root = box.current
    const focusables = (): HTMLElement[] =>
      root ? [...root.querySelectorAll<HTMLElement>('button, [href], input, select, textarea')].filter((e) => !e.hasAttribute('disabled')) : []
    ;(root?.querySelector<HTMLElement>('[data-autofocus]') ?? focusables()[0])?.focus()
    const onKey = (e: KeyboardEvent): void => {
      if (e.key === 'Escape') {
        e.preventDefault()
        props.onClose()
      } else if (e.key === 'Tab') {
        const items = focusables()
        const first = items[0]
        const last = items[items.length - 1]
        if (!first || !last) return
        if (e.shiftKey && document.activeElement === first) {
          e.preventDefault()
          last.focus()
        } else if (!e.shiftKey && document.activeElement === last) {
          e.preventDefault()
          first.focus()
        }
      }
    }
    document.addEventListener('keydown', onKey)
    return () => {
      document.removeEventListener('keydown', onKey)
      const back = opener.current
      // After the modal is gone from the page: focusing earlier would be undone by its removal.
      setTimeout(() => back?.isConnected && back.focus(), 0)
    }
    // Mounted once per opening: closing only needs the first onClose.
  }, [])
  return (
    <div class="backdrop">
      <div class="modal" role="dialog" aria-modal="true" aria-labelledby="modal-title" ref={box}>
        <h2 id="modal-title">{props.title}</h2>
        {props.children}
      </div>
    </div>
  )
}
