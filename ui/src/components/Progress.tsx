/** A spinner with a status line. */


export function Progress({ text }: { text: string }) {
  return (
    <div className="progress" role="status">
      <span className="spinner" /> {text}
    </div>
  );
}
