// Parsing of the filter and target fields of the RPC form.

import type { FactCondition } from "./socket";

export const FACT_OPERATORS = ["==", "!=", "<=", ">=", "=~", "<", ">"] as const;

/** Identities, classes or targets: separated by commas, spaces or newlines; `/re/` kept whole. */
export function splitList(text: string): string[] {
  return text.match(/\/(?:[^/\\]|\\.)+\/|[^\s,]+/g) ?? [];
}

export type FactParse = { ok: true; facts: FactCondition[] } | { ok: false; error: string };

const FACT_LINE = /^\s*([^\s=!<>~]+)\s*(==|!=|<=|>=|=~|<|>|=)\s*(.*?)\s*$/;

/** `name=value` lines (operators `==`, `!=`, `<`, `>`, `<=`, `>=`, `=~`; a single `=` means `==`). */
export function parseFacts(text: string): FactParse {
  const facts: FactCondition[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (!line.trim()) continue;
    const m = FACT_LINE.exec(line);
    if (!m || m[3] === "") {
      return {
        ok: false,
        error: `Line ${i + 1} is not a fact condition: write a fact name, an operator (${FACT_OPERATORS.join(" ")}) and a value, such as country=uk.`,
      };
    }
    facts.push({ fact: m[1], operator: m[2] === "=" ? "==" : m[2], value: m[3] });
  }
  return { ok: true, facts };
}

/** The policy rule an error message names: `(rule rpcutil.policy:3)`, `rule file:line`, … */
export function extractRule(message: string): string | null {
  const patterns = [
    /\(rule\s+([^)]+)\)/i,
    /\brule[:\s]+([^\s,;()]+:\d+)/i,
    /\b([\w./-]+\.policy:\d+)\b/,
    /\b([\w./-]+:\d+)\b/,
  ];
  for (const re of patterns) {
    const m = re.exec(message);
    if (m) return m[1].trim();
  }
  return null;
}
