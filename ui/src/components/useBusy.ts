/** A busy flag around an action whose failure is told to the person. */
import { useState } from "react";
import { humanError } from "../store";

/**
 * `[busy, run]`: `run(action)` sets `busy` while `action` runs and hands a failure, in words,
 * to `onError`.
 */
export function useBusy(onError: (m: string) => void): [boolean, (action: () => Promise<void>) => Promise<void>] {
  const [busy, setBusy] = useState(false);
  const run = async (action: () => Promise<void>) => {
    setBusy(true);
    try {
      await action();
    } catch (err) {
      onError(humanError(err));
    } finally {
      setBusy(false);
    }
  };
  return [busy, run];
}
