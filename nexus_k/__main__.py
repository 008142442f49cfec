from nexus_k.cli import main

main()
