"""`python -m paper_exchange --host 127.0.0.1 --port 5100 --initial-cash 1000000 [--faults plan.json]`."""

from paper_exchange.app import main

if __name__ == "__main__":
    main()
