/** The app's shell: which screen shows (sign-in, home, pre-join, call, settings), the signed-in user, deep links. */
import { listen } from "@tauri-apps/api/event";
import { useCallback, useEffect, useRef, useState } from "react";
import { api, type AppInfo, type Room, type User } from "./api";
import { humanError } from "./store";
import { Progress } from "./components/Progress";
import { joinRef } from "./joinRef";
import { Call } from "./screens/Call";
import { Home } from "./screens/Home";
import { PreJoin } from "./screens/PreJoin";
import { Settings } from "./screens/Settings";
import { useAudioProcessing } from "./audioProcessing";
import { applyKeptEffects } from "./videoEffects";
import { Forgot, Register, SignIn } from "./screens/SignIn";
import { useTheme } from "./theme";

type Screen =
  | { name: "loading" }
  | { name: "signin"; notice?: string }
  | { name: "register" }
  | { name: "forgot" }
  | { name: "home" }
  | { name: "prejoin"; room: Room }
  | { name: "call"; room: Room }
  | { name: "settings" };
export function App() {
  const [screen, setScreen] = useState<Screen>({ name: "loading" });
  const [user, setUser] = useState<User | null>(null);
  const [info, setInfo] = useState<AppInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [audio, setAudio] = useAudioProcessing();
  const [theme, setTheme] = useTheme();

  // The kept camera effects, before any camera opens.
  useEffect(applyKeptEffects, []);

  useEffect(() => {
    (async () => {
      try {
        setInfo(await api.appInfo());
        const u = await api.restoreSession();
        if (u) {
          setUser(u);
          setScreen({ name: "home" });
        } else {
          setScreen({ name: "signin" });
        }
      } catch (e) {
        setError(humanError(e));
        setScreen({ name: "signin" });
      }
    })();
  }, []);

  const go = (s: Screen) => {
    setError(null);
    setScreen(s);
  };

  // convoconnect://join/<room> links: open the room's pre-join once signed in (not mid-call).
  const screenRef = useRef(screen);
  screenRef.current = screen;
  const openLinked = useCallback(async () => {
    const name = screenRef.current.name;
    if (name === "loading" || name === "signin" || name === "register" || name === "forgot" || name === "call") return;
    const id = await api.takePendingLink().catch(() => null);
    if (!id) return;
    try {
      go({ name: "prejoin", room: await api.getRoom(id) });
    } catch (e) {
      setError(humanError(e));
    }
  }, []); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    const un = listen<string>("open-room", () => openLinked());
    return () => {
      un.then((f) => f());
    };
  }, [openLinked]);
  useEffect(() => {
    if (screen.name === "home") openLinked();
  }, [screen.name, openLinked]);

  return (
    <div className="app">
      <header className="bar">
        <span className="brand">ConvoConnect</span>
        {user && screen.name !== "call" && (
          <nav>
            <button className="link" onClick={() => go({ name: "home" })}>Home</button>
            <button className="link" id="settings-link" onClick={() => go({ name: "settings" })}>Settings</button>
          </nav>
        )}
        {user && <span className="who">{user.display_name}</span>}
      </header>
      {error && (
        <div className="error" role="alert" id="error">
          {error}
          <button className="link" onClick={() => setError(null)} aria-label="Dismiss">×</button>
        </div>
      )}
      <main>
        {screen.name === "loading" && <Progress text="Starting…" />}
        {screen.name === "signin" && (
          <SignIn
            info={info}
            notice={screen.notice}
            onError={setError}
            onSignedIn={(u) => {
              setUser(u);
              go({ name: "home" });
            }}
            onRegister={() => go({ name: "register" })}
            onForgot={() => go({ name: "forgot" })}
            onServer={async (url) => {
              await api.setServer(url);
              setInfo(await api.appInfo());
            }}
          />
        )}
        {screen.name === "register" && (
          <Register
            onError={setError}
            onDone={() => go({ name: "signin", notice: "Account created. Sign in with it now." })}
            onBack={() => go({ name: "signin" })}
          />
        )}
        {screen.name === "forgot" && <Forgot onError={setError} onBack={() => go({ name: "signin" })} />}
        {screen.name === "home" && <Home onError={setError} onOpen={(room) => go({ name: "prejoin", room })} />}
        {screen.name === "prejoin" && (
          <PreJoin
            room={screen.room}
            userId={user?.id ?? ""}
            info={info}
            onBack={() => go({ name: "home" })}
            onJoined={() => setScreen({ name: "call", room: screen.room })}
            onError={setError}
            joinRef={joinRef}
          />
        )}
        {screen.name === "call" && (
          <Call room={screen.room} joinRef={joinRef} onLeft={() => go({ name: "home" })} onError={setError} />
        )}
        {screen.name === "settings" && (
          <Settings
            info={info}
            theme={theme}
            onTheme={setTheme}
            audio={audio}
            onAudio={setAudio}
            onSignOut={async () => {
              await api.signOut();
              setUser(null);
              go({ name: "signin" });
            }}
          />
        )}
      </main>
    </div>
  );
}
