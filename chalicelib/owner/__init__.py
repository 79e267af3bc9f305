"""The data owner's view and control of what runs on their data (issue 22): who may read a job's
receipt (`access`), the publisher's audit log of a dataset (`audit`), results held until its
owners release them (`release`), and the route functions of both protocols (`handlers`, `requests`)."""
