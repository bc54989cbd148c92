/** Signing in, registering, and asking for a password reset. */
import { useEffect, useState } from "react";
import { api, type AppInfo, type User } from "../api";
import { humanError } from "../store";
import { useBusy } from "../components/useBusy";

export function SignIn(props: {
  info: AppInfo | null;
  notice?: string;
  onError: (m: string) => void;
  onSignedIn: (u: User) => void;
  onRegister: () => void;
  onForgot: () => void;
  onServer: (url: string) => Promise<void>;
}) {
  const [login, setLogin] = useState("");
  const [password, setPassword] = useState("");
  const [server, setServer] = useState(props.info?.server ?? "");
  const [busy, run] = useBusy(props.onError);
  useEffect(() => setServer(props.info?.server ?? ""), [props.info]);
  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    return run(async () => {
      if (server && server !== props.info?.server) await props.onServer(server);
      props.onSignedIn(await api.signIn(login, password));
    });
  };
  return (
    <form className="card narrow" onSubmit={submit}>
      <h1>Sign in</h1>
      {props.notice && <p className="notice">{props.notice}</p>}
      <label>Username or email<input id="login" value={login} onChange={(e) => setLogin(e.target.value)} required autoFocus /></label>
      <label>Password<input id="password" type="password" value={password} onChange={(e) => setPassword(e.target.value)} required /></label>
      <label>Server<input id="server" value={server} onChange={(e) => setServer(e.target.value)} /></label>
      <button id="sign-in" className="primary" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
      <div className="row">
        <button type="button" className="link" id="register-link" onClick={props.onRegister}>Create an account</button>
        <button type="button" className="link" onClick={props.onForgot}>Forgot password?</button>
      </div>
      {props.info && !props.info.keyring && (
        <p className="hint">No system keyring was found: you will need to sign in again after quitting.</p>
      )}
    </form>
  );
}

export function Register(props: { onError: (m: string) => void; onDone: () => void; onBack: () => void }) {
  const [f, setF] = useState({ username: "", email: "", password: "", display: "" });
  const [busy, run] = useBusy(props.onError);
  const set = (k: keyof typeof f) => (e: React.ChangeEvent<HTMLInputElement>) => setF({ ...f, [k]: e.target.value });
  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    return run(async () => {
      await api.register(f.username, f.email, f.password, f.display);
      props.onDone();
    });
  };
  return (
    <form className="card narrow" onSubmit={submit}>
      <h1>Create an account</h1>
      <label>Username<input id="reg-username" value={f.username} onChange={set("username")} required /></label>
      <label>Email<input id="reg-email" type="email" value={f.email} onChange={set("email")} required /></label>
      <label>Display name<input id="reg-display" value={f.display} onChange={set("display")} /></label>
      <label>Password (8 characters or more)<input id="reg-password" type="password" value={f.password} onChange={set("password")} required /></label>
      <button id="register" className="primary" disabled={busy}>{busy ? "Creating…" : "Create account"}</button>
      <button type="button" className="link" onClick={props.onBack}>Back to sign in</button>
    </form>
  );
}

export function Forgot(props: { onError: (m: string) => void; onBack: () => void }) {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      await api.forgotPassword(email);
      setSent(true);
    } catch (err) {
      props.onError(humanError(err));
    }
  };
  return (
    <form className="card narrow" onSubmit={submit}>
      <h1>Reset your password</h1>
      {sent ? (
        <p className="notice">If an account uses {email}, a reset link is on its way. Check your mail.</p>
      ) : (
        <>
          <label>Email<input type="email" value={email} onChange={(e) => setEmail(e.target.value)} required /></label>
          <button className="primary">Send reset link</button>
        </>
      )}
      <button type="button" className="link" onClick={props.onBack}>Back to sign in</button>
    </form>
  );
}
