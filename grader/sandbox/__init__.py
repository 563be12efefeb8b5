"""The sandbox: nothing outside this package touches pipes, file descriptors, uids or mounts.

``zygote`` (``Zygote``) runs the fork servers; ``process`` (``StudentProcess``) starts and
talks to student processes; ``plan`` decides what each may see; ``protocol`` declares and
validates everything that crosses the boundary; ``limits`` holds their resource limits;
``inside/`` is the only grader code that runs in a student process. Import from the
submodules (this file imports nothing, so that the command line starts fast).
"""
