from marlops.playbooks.service import main

main()
