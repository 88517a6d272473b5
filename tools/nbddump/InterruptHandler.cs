using System;
using System.Runtime.InteropServices;

namespace NbdSharp.Tools.Dump;

/// <summary>
/// Restores the terminal when the dump is interrupted (SIGINT, SIGQUIT, SIGTERM, SIGHUP) so that a coloured dump
/// cut short does not leave the terminal coloured, then exits with status 1, as libnbd's nbddump.
/// </summary>
internal sealed class InterruptHandler : IDisposable
{
    private static readonly PosixSignal[] s_signals = [PosixSignal.SIGINT, PosixSignal.SIGQUIT, PosixSignal.SIGTERM, PosixSignal.SIGHUP];

    private readonly PosixSignalRegistration[] _registrations;

    /// <summary>Installs the handlers for the duration of the dump.</summary>
    public InterruptHandler(HexDumpWriter writer)
    {
        _registrations = new PosixSignalRegistration[s_signals.Length];
        for (int i = 0; i < s_signals.Length; i++)
        {
            _registrations[i] = PosixSignalRegistration.Create(s_signals[i], context =>
            {
                context.Cancel = true;
                writer.Interrupt();
                Environment.Exit(1);
            });
        }
    }

    /// <summary>Removes the handlers.</summary>
    public void Dispose()
    {
        foreach (PosixSignalRegistration registration in _registrations)
            registration.Dispose();
    }
}
