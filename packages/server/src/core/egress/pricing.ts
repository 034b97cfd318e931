/**
 * Egress money: integer micro-USD everywhere a decision is taken, so sums never drift. Prices
 * use LiteLLM's field names (USD per token), so entries can be pasted from its price file; no
 * price is ever downloaded.
 */
export interface PriceEntry {
  input_cost_per_token: number
  output_cost_per_token: number
  cache_read_input_token_cost?: number | undefined
  cache_creation_input_token_cost?: number | undefined
  max_input_tokens: number
  max_output_tokens: number
}

export interface TokenUsage {
  input_tokens: number
  output_tokens: number
  /** Input tokens read from the provider's prompt cache (priced at the cache-read rate); part of input_tokens. */
  cached_input_tokens: number
  /** Input tokens written to the provider's prompt cache (Anthropic; the cache-creation rate); part of input_tokens. */
  cache_creation_input_tokens?: number
}

/** USD → micro-USD, rounded up: a charge is never smaller than the price. */
export const micro = (usd: number): number => Math.ceil(usd * 1_000_000 - 1e-9)

/**
 * The most a call can cost: its input bounded by the request's UTF-8 bytes (a token covers at
 * least one byte) and the model's input window, its output by the cap sent upstream, times `n`
 * choices. Non-text input (images, audio, files) is not bounded by bytes: it is reserved at the
 * whole input window.
 */
export function worstCaseMicro(price: PriceEntry, input: { bytes: number; opaque: boolean }, outputCap: number, choices = 1): number {
  const inputTokens = input.opaque ? price.max_input_tokens : Math.min(input.bytes, price.max_input_tokens)
  const inputRate = Math.max(price.input_cost_per_token, price.cache_creation_input_token_cost ?? 0)
  return micro(inputTokens * inputRate + outputCap * Math.max(1, choices) * price.output_cost_per_token)
}

/** What reported usage costs. */
export function usageMicro(price: PriceEntry, usage: TokenUsage): number {
  const cached = Math.min(usage.cached_input_tokens, usage.input_tokens)
  const created = Math.min(usage.cache_creation_input_tokens ?? 0, usage.input_tokens - cached)
  const cacheRate = price.cache_read_input_token_cost ?? price.input_cost_per_token
  const creationRate = price.cache_creation_input_token_cost ?? price.input_cost_per_token
  return micro(
    (usage.input_tokens - cached - created) * price.input_cost_per_token + cached * cacheRate + created * creationRate + usage.output_tokens * price.output_cost_per_token,
  )
}

export const usd = (microUsd: number): number => microUsd / 1_000_000
