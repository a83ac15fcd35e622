"""What the tests share, in one place (test modules never import each other):

    runs            a training configuration run in-process or in gloo processes; the parity recipe and check
    gpu             what one pytest session's processes share: results computed once, the GPU, the log
    budget_checks   the GPU tier's performance measurements and budget checks
    xdist           the one transfer of session state from xdist workers to the controller
    correctness     the checkpoint round trip and the convergence check (CPU tests and GPU tier)
    made_up         made-up points, budget devices and result folders
    processes       whether processes are alive (/proc)
    workers         rank functions that spawned processes import
    third_party_noise  an unknown third-party package making noise, for the console rule's tests
"""
