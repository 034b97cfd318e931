import type { RequestOptions } from '../core/client.js'
import { APIResource } from '../core/resource.js'
import { path } from '../internal/path.js'
import type { KeyView, Role } from '../types.js'

/** API keys (admin keys only). */
export class Keys extends APIResource {
  /** Creates a key; the raw `key` appears only in this answer. Agent keys register their agent. */
  create(params: KeyCreateParams, options?: RequestOptions): Promise<KeyCreateResponse> {
    return this._client.post('/v1/keys', params, options)
  }

  /** Lists keys (never the keys themselves). */
  list(options?: RequestOptions): Promise<KeyListResponse> {
    return this._client.get('/v1/keys', undefined, options)
  }

  /** Revokes a key: it answers 401 from the next request on. Revoking the last admin key is a 409. */
  revoke(keyId: string, options?: RequestOptions): Promise<KeyRevokeResponse> {
    return this._client.delete(path`/v1/keys/${keyId}`, options)
  }
}

export interface KeyCreateParams {
  role: Role
  /** For `role: "agent"`: the address the key acts as. */
  agent?: string | undefined
  /** A label for listings. */
  name?: string | undefined
}

export interface KeyCreateResponse extends KeyView {
  ok: true
  /** The raw key (`cp_…`): store it now, it is never shown again. */
  key: string
}

export interface KeyListResponse {
  ok: true
  keys: KeyView[]
}

export interface KeyRevokeResponse {
  ok: true
  key: KeyView
}
