from nas.cli import main

if __name__ == "__main__":  # not when a spawned process (nas.trials.costs) imports it
    main()
