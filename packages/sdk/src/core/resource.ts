import type { APIClient } from './client.js'

/** Base of the `Operator` resources: holds the shared client. */
export abstract class APIResource {
  protected readonly _client: APIClient

  constructor(client: APIClient) {
    this._client = client
  }
}
