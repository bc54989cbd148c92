/** What pre-join hands the call screen (the call's first state and the events that came before it mounted). */
import { type CallEvent, type CallState } from "./store";

/** What pre-join hands the call screen. */
export interface JoinResult {
  me: string;
  state: CallState;
  pending: CallEvent[];
}
export const joinRef: { current: JoinResult | null; listener: ((e: CallEvent) => void) | null } = {
  current: null,
  listener: null,
};
