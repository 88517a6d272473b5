namespace NbdSharp;

/// <summary>
/// The scope <see cref="NbdHandle.BatchRequests"/> returns: while it lasts, the aio requests its thread issues wait in
/// their handles' queues; <see cref="Dispose"/> ends it and sends them.
/// </summary>
public ref struct RequestBatch
{
    private bool _open;

    internal RequestBatch(bool open) => _open = open;

    /// <summary>
    /// Ends the scope. When it is the thread's outermost, the requests held back go out now, as far as each socket
    /// takes them (the rest as <see cref="NbdHandle.AioNotifyWrite"/> or <see cref="NbdHandle.Poll"/> sends them).
    /// Call it on the thread that began the scope; a second call does nothing.
    /// </summary>
    public void Dispose()
    {
        if (!_open)
            return;
        _open = false;
        Engine.CommandEngine.EndBatch();
    }
}
