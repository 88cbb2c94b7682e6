// Inputs generated from an action's DDL (Choria JSON DDL).

import type { DdlAction, DdlInput } from "./api";
import { h, uid } from "./dom";

interface Control {
  name: string;
  input: DdlInput;
  el: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
  /** The value to send, `undefined` to leave it out; throws a message when invalid. */
  value(): unknown;
}

const NAMED_VALIDATORS: Record<string, { test: (v: string) => boolean; message: string }> = {
  shellsafe: {
    test: (v) => !/[`$;|&><\n\r]/.test(v),
    message: "Remove shell characters: it must not contain ` $ ; | & > < or a line break.",
  },
  ipv4address: {
    test: (v) => /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/.test(v),
    message: "Enter an IPv4 address, such as 192.0.2.10.",
  },
  ipv6address: { test: (v) => /^[0-9a-f:.]+$/i.test(v) && v.includes(":"), message: "Enter an IPv6 address, such as 2001:db8::1." },
  ipaddress: {
    test: (v) => NAMED_VALIDATORS.ipv4address.test(v) || NAMED_VALIDATORS.ipv6address.test(v),
    message: "Enter an IP address (IPv4 or IPv6).",
  },
};

/**
 * A check of a string input against its DDL `validation`, answering in words. A regular
 * expression is not shown to the user as the message: it names what the input is instead, and
 * the pattern stays in the field's tooltip for whoever wants it.
 */
function stringValidator(
  validation: string | undefined,
  what: string,
): ((v: string) => string | null) | null {
  if (!validation) return null;
  const named = NAMED_VALIDATORS[validation.toLowerCase()];
  if (named) return (v) => (named.test(v) ? null : named.message);
  let re: RegExp;
  try {
    const m = /^\/(.*)\/([a-z]*)$/.exec(validation);
    re = m ? new RegExp(m[1], m[2]) : new RegExp(validation);
  } catch {
    return null; // A validator this page does not know: the agent checks it.
  }
  return (v) => (re.test(v) ? null : `This is not a valid ${what}: check its spelling and the hint below.`);
}

function defaultText(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export class ActionInputs {
  readonly root: HTMLElement;
  private controls: Control[] = [];

  constructor(action: DdlAction | null) {
    this.root = h("div", { class: "inputs" });
    if (!action) return;
    const entries = Object.entries(action.input ?? {});
    if (entries.length === 0) {
      this.root.append(h("p", { class: "muted small" }, "This action takes no inputs."));
      return;
    }
    for (const [name, input] of entries) {
      const control = this.build(name, input);
      this.controls.push(control);
    }
  }

  private build(name: string, input: DdlInput): Control {
    const type = (input.type ?? "string").toLowerCase();
    const required = input.optional === false;
    const id = uid(`in-${name}`);
    const common = { id, name, "data-testid": `input-${name}` };
    const desc = [input.description, type !== "string" ? type : null].filter(Boolean).join(" · ");
    const hintId = `${id}-hint`;
    let el: Control["el"];
    let value: () => unknown;

    if (type === "boolean") {
      const box = h("input", { ...common, type: "checkbox", "aria-describedby": hintId });
      box.checked = input.default === true || input.default === "true";
      el = box;
      const initial = box.checked;
      value = () =>
        required || (input.default !== undefined && input.default !== null) || box.checked !== initial
          ? box.checked
          : undefined;
      const wrap = h(
        "div",
        { class: "field check" },
        h("label", { for: id }, box, " ", input.prompt || name, required ? req() : null),
        h("div", { class: "hint", id: hintId }, desc),
      );
      this.root.append(wrap);
      return { name, input, el, value };
    }

    if (type === "list" && Array.isArray(input.list)) {
      const select = h("select", { ...common, required, "aria-describedby": hintId });
      if (!required || input.default === undefined || input.default === null) {
        select.append(h("option", { value: "" }, required ? "— choose —" : "— not set —"));
      }
      for (const option of input.list) select.append(h("option", { value: String(option) }, String(option)));
      select.value = defaultText(input.default);
      el = select;
      value = () => (select.value === "" ? undefined : select.value);
    } else if (type === "integer" || type === "number" || type === "float") {
      const num = h("input", {
        ...common,
        type: "number",
        step: type === "integer" ? "1" : "any",
        inputmode: type === "integer" ? "numeric" : "decimal",
        required,
        "aria-describedby": hintId,
      });
      num.value = defaultText(input.default);
      el = num;
      value = () => {
        if (num.value.trim() === "") return undefined;
        const n = Number(num.value);
        if (!Number.isFinite(n) || (type === "integer" && !Number.isInteger(n))) {
          throw new Error(`${input.prompt || name}: enter ${type === "integer" ? "a whole number" : "a number"}.`);
        }
        return n;
      };
    } else if (type === "hash" || type === "array") {
      const area = h("textarea", {
        ...common,
        rows: 2,
        spellcheck: "false",
        required,
        placeholder: type === "hash" ? 'e.g. {"key": "value"}' : 'e.g. ["a", "b"]',
        "aria-describedby": hintId,
      });
      area.value = defaultText(input.default);
      el = area;
      const check = () => {
        let msg = "";
        if (area.value.trim()) {
          try {
            const parsed: unknown = JSON.parse(area.value);
            const isArray = Array.isArray(parsed);
            if (type === "array" ? !isArray : isArray || typeof parsed !== "object" || parsed === null) {
              msg = `Enter a JSON ${type === "array" ? "list, such as [\"a\", \"b\"]" : "object, such as {\"key\": \"value\"}"}.`;
            }
          } catch {
            msg = "This is not valid JSON: check the quotes, commas and brackets.";
          }
        }
        area.setCustomValidity(msg);
      };
      area.addEventListener("input", check);
      value = () => (area.value.trim() ? (JSON.parse(area.value) as unknown) : undefined);
    } else {
      const text = h("input", {
        ...common,
        type: "text",
        autocomplete: "off",
        spellcheck: "false",
        required,
        maxlength: input.maxlength && input.maxlength > 0 ? input.maxlength : null,
        "aria-describedby": hintId,
      });
      text.value = defaultText(input.default);
      el = text;
      const validator = stringValidator(input.validation, (input.prompt || name).toLowerCase());
      if (validator) {
        if (!NAMED_VALIDATORS[input.validation?.toLowerCase() ?? ""]) {
          text.title = `The agent checks this against the pattern ${input.validation ?? ""}`;
        }
        const check = () => text.setCustomValidity(text.value ? (validator(text.value) ?? "") : "");
        text.addEventListener("input", check);
        check();
      }
      value = () => (text.value === "" ? undefined : text.value);
    }

    const label = h("label", { for: id }, input.prompt || name, required ? req() : null);
    const hint = h("div", { class: "hint", id: hintId }, desc || "\u00a0");
    this.root.append(h("div", { class: "field" }, label, el, hint));
    return { name, input, el, value };
  }

  /** The action's data; throws an Error naming the first bad input. */
  data(): Record<string, unknown> {
    const data: Record<string, unknown> = {};
    for (const control of this.controls) {
      const v = control.value();
      if (v !== undefined) data[control.name] = v;
    }
    return data;
  }

  focusFirst(): void {
    this.controls[0]?.el.focus();
  }
}

function req(): HTMLElement {
  return h("span", { class: "req", title: "required", "aria-label": "required" }, " *");
}
