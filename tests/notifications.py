#!/usr/bin/env python3
"""A desktop notification server for the tests: owns org.freedesktop.Notifications on the
session bus and prints each notification as a line: NOTIFY <app> <summary> <body>
(tab-separated). Prints READY once it owns the name."""
import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

IFACE = "org.freedesktop.Notifications"


class Server(dbus.service.Object):
    def __init__(self, bus):
        self.name = dbus.service.BusName(IFACE, bus, do_not_queue=True)
        super().__init__(bus, "/org/freedesktop/Notifications")
        self.count = 0

    @dbus.service.method(IFACE, in_signature="susssasa{sv}i", out_signature="u")
    def Notify(self, app, replaces, icon, summary, body, actions, hints, timeout):
        self.count += 1
        print(f"NOTIFY\t{app}\t{summary}\t{body}", flush=True)
        return self.count

    @dbus.service.method(IFACE, out_signature="as")
    def GetCapabilities(self):
        return ["body"]

    @dbus.service.method(IFACE, out_signature="ssss")
    def GetServerInformation(self):
        return ("convo-test", "ConvoConnect", "1.0", "1.2")

    @dbus.service.method(IFACE, in_signature="u")
    def CloseNotification(self, _id):
        pass


DBusGMainLoop(set_as_default=True)
server = Server(dbus.SessionBus())
print("READY", flush=True)
GLib.MainLoop().run()
