// The few things every page imports: Preact (through htm's tagged templates, so
// no build step turns JSX into calls) and its hooks.
import { h, render } from "./vendor/preact.js";
import htm from "./vendor/htm.js";

export { render };
export {
  useState,
  useEffect,
  useRef,
  useMemo,
  useCallback,
  useErrorBoundary,
} from "./vendor/hooks.js";

export const html = htm.bind(h);
