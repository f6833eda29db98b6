// Prometheus histograms for /metrics: request latencies under vLLM's names and buckets, which is
// what existing dashboards and autoscalers read.

/** Escapes a label value for the Prometheus text format. */
export const labelValue = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

export class Histogram {
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {
    this.#counts = buckets.map(() => 0);
  }

  observe(v: number): void {
    this.#sum += v;
    this.#count++;
    const i = this.buckets.findIndex((b) => v <= b);
    if (i >= 0) this.#counts[i]++;
  }

  /** The family in the text format; `labels` is `name="value",...` (possibly empty). */
  lines(labels: string): string[] {
    const sep = labels ? ',' : '';
    let cum = 0;
    return [
      `# HELP ${this.name} ${this.help}`,
      `# TYPE ${this.name} histogram`,
      ...this.buckets.map((b, i) => {
        cum += this.#counts[i];
        return `${this.name}_bucket{${labels}${sep}le="${b}"} ${cum}`;
      }),
      `${this.name}_bucket{${labels}${sep}le="+Inf"} ${this.#count}`,
      `${this.name}_sum{${labels}} ${this.#sum.toFixed(6)}`,
      `${this.name}_count{${labels}} ${this.#count}`,
    ];
  }
}

/** The latency histograms a server keeps (vLLM's names and buckets). */
export function latencyHistograms() {
  return {
    ttft: new Histogram(
      'vllm:time_to_first_token_seconds',
      'Time from the request arriving to its first generated token (each answer of n).',
      [
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640,
        2560,
      ],
    ),
    itl: new Histogram(
      'vllm:time_per_output_token_seconds',
      'Time between consecutive generated tokens of an answer (inter-token latency).',
      [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80],
    ),
    e2e: new Histogram(
      'vllm:e2e_request_latency_seconds',
      'Time from a generation request arriving to its response ending (successful requests).',
      [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680],
    ),
  };
}
