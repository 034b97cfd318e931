import type { Operator } from '@chokepoint/sdk'
import { useState } from 'preact/hooks'
import { Modal } from './modal.js'
import { describeError } from './session.js'

export interface KillTarget {
  action: 'kill' | 'resume'
  address_id: string
  address: string
  display_name: string
  /** Quarantine (kill) or release (resume) this one instance instead of the agent. */
  instance_id?: string
}

/**
 * Kill or resume one agent: names it, takes a reason, one red confirm button. What it shows
 * afterwards is the gateway's answer (held intents, redelivering), never a guess.
 */
export function KillDialog(props: { op: Operator; target: KillTarget; onClose: () => void; onDone: () => void }) {
  const { target } = props
  const [reason, setReason] = useState('')
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<string | null>(null)
  const [result, setResult] = useState<string | null>(null)
  const kill = target.action === 'kill'
  const instance = target.instance_id

  async function confirm(event: Event): Promise<void> {
    event.preventDefault()
    if (kill && reason.trim() === '') {
      setError('Give a reason: it goes into the audit trail with your key.')
      return
    }
    setBusy(true)
    setError(null)
    try {
      const body = reason.trim() === '' ? {} : { reason: reason.trim() }
      if (instance !== undefined) {
        if (kill) {
          const res = await props.op.agents.killInstance(target.address_id, instance, body)
          setResult(`Quarantined ${instance}: ${res.requeued} leased intent${res.requeued === 1 ? '' : 's'} went back to the other instances.`)
        } else {
          await props.op.agents.resumeInstance(target.address_id, instance, body)
          setResult(`${instance} may work again.`)
        }
      } else if (kill) {
        const res = await props.op.agents.kill(target.address_id, body)
        setResult(`Killed at ${new Date(res.killed_at).toLocaleTimeString()}: ${res.held_intents} intent${res.held_intents === 1 ? '' : 's'} held.`)
      } else {
        const res = await props.op.agents.resume(target.address_id, body)
        setResult(
          res.resumed_at === null
            ? 'It was not killed: nothing to resume.'
            : `Resumed: ${res.redelivering} held intent${res.redelivering === 1 ? '' : 's'} redelivering.`,
        )
      }
      props.onDone()
    } catch (e) {
      setError(describeError(e))
    } finally {
      setBusy(false)
    }
  }

  return (
    <Modal
      title={
        instance !== undefined
          ? `${kill ? 'Quarantine' : 'Release'} ${instance} of ${target.display_name}?`
          : kill
            ? `Kill ${target.display_name}?`
            : `Resume ${target.display_name}?`
      }
      onClose={props.onClose}
    >
      <p class="address">{target.address}</p>
      {result === null ? (
        <form onSubmit={(e) => void confirm(e)}>
          <p>
            {instance !== undefined
              ? kill
                ? 'This instance stops receiving, acknowledging and resolving; its leased work goes to the other instances at once. The agent keeps working.'
                : 'This instance may receive and finish work again.'
              : kill
                ? 'Every instance, on every replica, stops sending, receiving and finishing work at once. Pending work is held, not lost.'
                : 'The agent works again; its held intents are redelivered, oldest first.'}
          </p>
          <label for="kill-reason">Reason{kill ? '' : ' (optional)'}</label>
          <textarea
            id="kill-reason"
            data-autofocus
            rows={3}
            maxLength={1000}
            value={reason}
            onInput={(e) => setReason((e.target as HTMLTextAreaElement).value)}
          />
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
          <div class="actions">
            <button type="button" onClick={props.onClose}>
              Cancel
            </button>
            <button type="submit" class={kill ? 'danger' : 'primary'} disabled={busy}>
              {busy ? 'Working…' : instance !== undefined ? (kill ? 'Quarantine instance' : 'Release instance') : kill ? 'Kill agent' : 'Resume agent'}
            </button>
          </div>
        </form>
      ) : (
        <>
          <p class="result" role="status">
            {result}
          </p>
          <div class="actions">
            <button type="button" class="primary" data-autofocus onClick={props.onClose}>
              Close
            </button>
          </div>
        </>
      )}
    </Modal>
  )
}
